"""orders: the order aggregate and the saga that reserves stock, charges and confirms."""
