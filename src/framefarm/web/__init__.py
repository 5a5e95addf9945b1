"""The one HTTP server stack every listening kind uses: Starlette apps served by uvicorn in the kind's thread."""
