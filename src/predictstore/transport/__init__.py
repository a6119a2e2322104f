"""Transport: the only layer that imports generated code, in three rooms.

- ``servicers/``: one module per service (or per RPC family of a large one): the handler
  of each RPC, which validates at the edge and calls storage.
- ``interceptors/``: what every call passes through, in the order app.py chains them:
  RPC metrics, errors to statuses, auth, stream limits, audit.
- ``wire/``: codecs between protobuf and domain values: conversions, bounded frames,
  Struct to JSON, column forms and column-wise bucket encoding.

``exposure.py`` (TLS and the refusal to serve beyond loopback unauthenticated) stays at
the top: it configures the server, not a call.
"""
