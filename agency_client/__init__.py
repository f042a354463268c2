"""ixb agency client: SDK, key handling and the agency-side CLI."""
