"""suite/report"""
