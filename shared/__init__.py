"""Code every Orderflow worker shares: contracts, messaging, store access, settings."""
