"""The shared library: settings, topics, message schemas and the MQTT client every service uses."""

__version__ = "0.1.0"
