"""The ``ixb`` command: a thin dispatcher over broker's and agency_client's CLIs."""
