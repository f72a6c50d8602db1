"""The app's views, one blueprint per kind of client: ``auth`` (login, logout, health), ``pages`` (HTML for
the owner), ``api`` (JSON), ``live`` (camera pictures) and ``stream`` (Server-Sent Events)."""
