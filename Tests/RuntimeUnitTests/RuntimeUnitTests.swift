// Unit tests of the runtime's pure logic: the consumer's and producer's state machines.
// Each test drives a machine with events and asserts the actions it returns; no I/O.
