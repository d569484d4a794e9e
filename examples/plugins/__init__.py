"""Third-party gateway policies, as a user would write them in their own package."""
