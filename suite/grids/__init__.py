"""suite/grids"""
