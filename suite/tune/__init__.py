"""suite/tune"""
