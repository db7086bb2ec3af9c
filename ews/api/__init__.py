"""The HTTP API and the duty dashboard (docs/api.md).

`app.create_app` builds the FastAPI application over an `ApiContext` (the parts of a running
pipeline the API reads and writes); `server.ApiServer` serves it from a thread of the
pipeline process. Every request but health, readiness, metrics and the dashboard's static
files carries a bearer token from the tokens file (`auth`), scoped to a region subtree and a
role.
"""
