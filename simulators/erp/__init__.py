"""Stand-ins of the ERPs the relay posts to: :mod:`simulators.erp.sap` (SAP S/4HANA OData V2)."""
