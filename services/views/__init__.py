"""views: the read side (CQRS) - read models fed by order, notification and product events."""
