"""suite/tracking"""
