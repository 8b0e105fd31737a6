"""The dashboard and Prometheus /metrics: FastAPI + uvicorn over the store, read-only.

`app.create_app` builds the ASGI app; `server.prepare` binds and checks the token; `queries` holds
the SQL the pages, the API and the live stream share; `metrics` is the scrape-time collector.
"""
