"""Transport: gRPC servicers, interceptors and proto conversion. The only layer that
imports generated code."""
