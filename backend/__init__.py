"""The optimisation server: field, renderer, guidance, SDS trainer, mesh extraction, ZeroMQ service."""
