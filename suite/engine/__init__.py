"""suite/engine"""
