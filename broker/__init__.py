"""ixb national hub: ingress, verification, policy, routing, audit log, liaison pages."""
