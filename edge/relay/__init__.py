"""The ERP relay: confirmations from the gateways posted to the ERP exactly once, verdicts back.

``edge relay run --config relay.toml`` runs it. It takes every gateway's confirmations and
reversals through an MQTT 5 shared subscription (several relays split the work), keeps a ledger
keyed by ``idem_key`` (SQLite for one relay, PostgreSQL when several share the work), posts
through one adapter per ERP (:mod:`edge.relay.erp` is the interface) and answers each message on
the gateway's ``confirmation/result`` topic.
"""
