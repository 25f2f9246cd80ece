"""Missions: the dispatcher and what feeds it."""
