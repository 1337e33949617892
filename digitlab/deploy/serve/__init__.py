"""`digitlab serve`: a trained model over HTTP (LitServe), with a page to draw digits on."""

from digitlab.deploy.serve.command import serve_command

__all__ = ["serve_command"]
