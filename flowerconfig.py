"""Flower settings: loopback by default (Flower 2.x itself binds every interface)."""

address = "127.0.0.1"
port = 5555
