"""Venue collectors: websocket frames in, typed events out, onto Redis streams."""
