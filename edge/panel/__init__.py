"""The operator touch panel and the local API the daemon serves (FastAPI on uvicorn).

``server.run_panel(engine, cfg)`` is the gateway component; ``api.create_app`` builds the app;
``auth`` holds the supervisor PIN (hashed, rate limited). Nothing here writes state: every
command is an input submitted to the engine and answered after its commit.
"""
