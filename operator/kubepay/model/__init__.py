"""What a payment is: phases, money, identity, labels and conditions of both kinds; no I/O."""
