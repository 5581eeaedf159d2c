"""What kmflow serves to people in a browser: the API docs and the evidence page, with every
asset from this installation (users run it without internet access)."""
