"""Servicers: one module per service, or per RPC family of a large service."""
