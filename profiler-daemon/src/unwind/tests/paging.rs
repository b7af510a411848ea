//! Paged rows of random synthetic CFI, against a table derived address by address from the
//! FDEs' own definitions (not from spans): streamed through `.eh_frame_hdr`'s order, and
//! sorted first when the section's order is not the address order.

use super::*;

/// One synthetic FDE: `start..start + len`; from each `(offset, change)` on, the CFA offset
/// becomes `change` (or, for 0, the return address is undefined from there on).
#[derive(Clone, Debug)]
struct Model {
    start: u64,
    len: u32,
    changes: Vec<(u32, u16)>,
}

impl Model {
    fn fde(&self) -> FrameDescriptionEntry {
        let instructions: Vec<(u32, Cfi)> = self
            .changes
            .iter()
            .map(|&(offset, change)| match change {
                0 => (offset, Cfi::Undefined(RA)),
                n => (offset, Cfi::CfaOffset(n.into())),
            })
            .collect();
        fde(self.start, self.len, &instructions)
    }

    /// (start, end, row at pc_low 0) of each of the FDE's rows.
    fn spans(&self) -> Vec<(u64, u64, UnwindRow)> {
        let (mut cfa, mut undefined) = (8, false);
        let mut bounds = vec![(0, rsp(0, 8))];
        for &(offset, change) in &self.changes {
            match change {
                0 => undefined = true,
                n => cfa = n,
            }
            let row = if undefined { end(0) } else { rsp(0, cfa) };
            bounds.push((offset, row));
        }
        let end = self.start + u64::from(self.len);
        (0..bounds.len())
            .map(|i| {
                let from = self.start + u64::from(bounds[i].0);
                let to = bounds
                    .get(i + 1)
                    .map_or(end, |b| self.start + u64::from(b.0));
                (from, to, bounds[i].1)
            })
            .collect()
    }
}

/// The table of FDEs read in this order, address by address: at each address the rule of the
/// row that starts last at or before it (of the FDEs starting there, the one read last), if
/// the address is before that row's end; else unsupported.
fn expected(read: &[Model], pages: u64) -> (Vec<UnwindRow>, Vec<(u32, u32, u32)>) {
    let mut spans: Vec<(u64, usize, u64, UnwindRow)> = read
        .iter()
        .enumerate()
        .flat_map(|(i, m)| m.spans().into_iter().map(move |(s, e, r)| (s, i, e, r)))
        .collect();
    spans.sort_by_key(|&(start, order, ..)| (start, order));
    let (mut rows, mut entries) = (Vec::new(), Vec::new());
    let mut next = 0;
    let mut winner: Option<(u64, UnwindRow)> = None;
    for page in 0..pages {
        let mut page_rows: Vec<UnwindRow> = Vec::new();
        for low in 0..=0xffff_u16 {
            let address = (page << 16) | u64::from(low);
            while spans.get(next).is_some_and(|s| s.0 <= address) {
                winner = Some((spans[next].2, spans[next].3));
                next += 1;
            }
            let rule = match winner {
                Some((end, row)) if address < end => row,
                _ => unsupported(0),
            };
            let row = UnwindRow {
                pc_low: low,
                ..rule
            };
            if page_rows.last().is_none_or(|last| {
                UnwindRow {
                    pc_low: low,
                    ..*last
                } != row
            }) {
                page_rows.push(row);
            }
        }
        if page_rows != [unsupported(0)] {
            entries.push((page as u32, rows.len() as u32, page_rows.len() as u32));
            rows.extend(page_rows);
        }
    }
    (rows, entries)
}

fn random_models(random: &mut impl FnMut() -> u64, pages: u64) -> Vec<Model> {
    let mut models: Vec<Model> = Vec::new();
    for _ in 0..40 {
        let start = match random() % 6 {
            // The same start as another FDE, or right after it.
            0 if !models.is_empty() => models[random() as usize % models.len()].start,
            1 if !models.is_empty() => {
                let m = &models[random() as usize % models.len()];
                m.start + u64::from(m.len)
            }
            _ => 0x1000 + random() % (pages << 16),
        };
        let len = match random() % 8 {
            // Over whole pages.
            0 => 0x1_0000 + random() as u32 % 0x1_8000,
            _ => 1 + random() as u32 % 0x3000,
        };
        let mut offsets: Vec<u32> = (0..random() % 5).map(|_| random() as u32 % len).collect();
        offsets.retain(|&o| o > 0);
        offsets.sort_unstable();
        offsets.dedup();
        let changes = offsets
            .into_iter()
            .map(|o| (o, [0, 8, 16, 24, 16][random() as usize % 5]))
            .collect();
        models.push(Model {
            start,
            len,
            changes,
        });
    }
    models
}

#[test]
fn streamed_and_sorted_rows_equal_the_rules_address_by_address() {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let address = 0x100_0000;
    for _ in 0..6 {
        let models = random_models(&mut random, 4);
        // Every page up to the last FDE's end, and one more: it has no entry.
        let last = models.iter().map(|m| m.start + u64::from(m.len)).max();
        let pages = (last.unwrap_or(0) >> 16) + 2;
        let data = eh_frame(cie(), models.iter().map(Model::fde).collect());
        // The FDEs' addresses, in the section's order (the order they were added).
        let offsets = fde_addresses(&data, address);
        assert_eq!(offsets.len(), models.len());
        // The header lists them by address; at the same address, in the section's order.
        let mut listed: Vec<usize> = (0..models.len()).collect();
        listed.sort_by_key(|&i| models[i].start);
        let hdr = eh_frame_hdr(
            address,
            &listed
                .iter()
                .map(|&i| (models[i].start, offsets[i]))
                .collect::<Vec<_>>(),
        );
        let by_address: Vec<Model> = listed.iter().map(|&i| models[i].clone()).collect();
        let streamed = table_through_header(&data, address, &hdr);
        assert_eq!(streamed.stats.source, CfiSource::EhFrameHdr);
        let (rows, entries) = expected(&by_address, pages);
        assert_eq!((&streamed.rows, &streamed.pages), (&rows, &entries));
        assert_eq!(streamed.stats.rows, rows.len() as u64);

        // A header that lists the FDEs backwards is no order either: sorted first, the FDEs
        // of one address in the header's order.
        let backwards: Vec<usize> = listed.iter().rev().copied().collect();
        let hdr = eh_frame_hdr(
            address,
            &backwards
                .iter()
                .map(|&i| (models[i].start, offsets[i]))
                .collect::<Vec<_>>(),
        );
        let read: Vec<Model> = backwards.iter().map(|&i| models[i].clone()).collect();
        let sorted = table_through_header(&data, address, &hdr);
        let (rows, entries) = expected(&read, pages);
        assert_eq!((&sorted.rows, &sorted.pages), (&rows, &entries));

        // In the section's order: sorted first where that is not the address order.
        assert!(!models.is_sorted_by_key(|m| m.start));
        let (rows, entries) = expected(&models, pages);
        let in_order = table_of(&data, &LIMITS).expect("a table");
        assert_eq!((&in_order.rows, &in_order.pages), (&rows, &entries));
        let mut section = DebugFrame(EndianVec::new(LittleEndian));
        frame_table(cie(), models.iter().map(Model::fde).collect())
            .write_debug_frame(&mut section)
            .expect("written");
        let debug = section.0.into_vec();
        let debug = section_table(&Section::debug_frame(&debug), &LIMITS).expect("a table");
        assert_eq!((&debug.rows, &debug.pages), (&rows, &entries));
    }
}
