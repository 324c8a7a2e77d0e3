"""suite/exec"""
