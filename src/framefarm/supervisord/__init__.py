"""The master: supervisord's config rendered from the pipeline, and its control over XML-RPC."""
