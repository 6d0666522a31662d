package nodedev

// BigTCPMaxSize is the largest GSO size BIG TCP sets, for the external tests.
const BigTCPMaxSize = bigTCPMaxSize
