"""SentryCam services: one package per container, plus the shared library in ``services.common``."""
