"""Stand-ins for the world around the gateway: broker, central (dispatch, ERP relay), machines."""
