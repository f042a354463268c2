"""The attack corpus: each case states an attack, sends it against a running federation
(real nats-servers, real hubs, real agencies) and asserts what SPEC §4.7, §5, §8 and §9
promise: the exact refusal code, who gets a signed rejection receipt (§9.1), the audit
entry at the refusing hub, nothing delivered, and the hub still serving afterwards.
"""
