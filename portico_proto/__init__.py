"""Code generated from the `.proto` files under `proto/` (`make proto`, tools/protogen.py).

`portico_proto.<service>.v<N>` holds `<name>_pb2` (messages), `<name>_pb2.pyi` (their types)
and `<name>_pb2_grpc` (stubs and servicers) for the proto package `portico.<service>.v<N>`.
Never edit the generated files: change the `.proto` and run `make proto`; a unit test fails
when they differ from a fresh generation. Only these `__init__.py` files are written by hand.
"""
