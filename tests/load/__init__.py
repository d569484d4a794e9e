"""`make load`: the real user journey through the gateway under Locust (see __main__)."""

# 50 units each in the demo stock; an order takes 1-2, so a default run does not sell out
# (one that does is REJECTED out of stock: still a correct outcome, not a failed request)
SKUS = ["BK-0001", "BK-0002", "EL-0001", "KT-0001", "OD-0001", "TY-0001"]
