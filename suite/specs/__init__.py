"""suite/specs"""
