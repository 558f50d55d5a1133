"""Host-side tools (not needed by the services at run time)."""
