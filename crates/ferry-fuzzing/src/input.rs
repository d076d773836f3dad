//! Turning a fuzzer's bytes into choices: each call takes what it needs from the front and, once the bytes run
//! out, reads zeros, so that every input (even the empty one) describes a complete case and small changes to the
//! bytes make small changes to the case.

/// The unread part of an input.
pub(crate) struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// The next byte (0 once the input is used up).
    pub(crate) fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// A number below `n` from a single byte (for small choices).
    pub(crate) fn small(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        usize::from(self.byte()) % n
    }

    pub(crate) fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// One of `items`; `None` only when `items` is empty.
    pub(crate) fn pick<'b, T>(&mut self, items: &'b [T]) -> Option<&'b T> {
        let i = self.small(items.len());
        items.get(i)
    }
}
