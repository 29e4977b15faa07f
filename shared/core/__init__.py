"""The pure core: lab plans as data, the governed settings, the policy, evaluation, the proof after a write,
reports and the compliance page as data. No Azure, no network, no clock but the one passed in.
"""
