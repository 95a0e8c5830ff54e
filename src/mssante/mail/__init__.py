"""Messages the operator writes itself: delivery status notifications (DSNs)."""
