"""notifications: consumes order and payment events and keeps each user's notifications."""
