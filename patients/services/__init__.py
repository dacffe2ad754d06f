"""Every write that a protocol rule governs. Admin forms, the API, commands and tests call these."""
