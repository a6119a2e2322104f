"""Interceptors every call passes through: metrics, errors, auth, limits, audit."""
