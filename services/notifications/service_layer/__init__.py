"""The event handler (one notification per event) and the API's use cases."""
