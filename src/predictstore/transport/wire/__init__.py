"""Wire codecs: protobuf to domain values and back, frames, Struct JSON, column forms."""
