"""A TestCase whose class shares one Client (the first one starts the private daemon
that DELTABOX_SOCKET / DELTABOX_ROOT / DELTABOX_BIN describe)."""
import unittest

from deltabox import Client


class DaemonCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = Client()

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
