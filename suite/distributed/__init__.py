"""suite/distributed"""
