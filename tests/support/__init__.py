"""What the tests share: fakes of the use cases' ports, builders of requests and audio, and the harnesses that run the
handlers against moto. Test modules import from here, never from each other."""
