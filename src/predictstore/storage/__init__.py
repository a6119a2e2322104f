"""Storage: PostgreSQL access through asyncpg. Knows SQL, never gRPC."""
