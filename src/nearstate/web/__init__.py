"""The platform's ASGI apps."""
