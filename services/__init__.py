"""The five Orderflow workers, each in its own package: order, inventory, payment, notification, reporting."""
