"""A shared HTTP cache (RFC 9111): pure policy decisions kept apart from storage."""
