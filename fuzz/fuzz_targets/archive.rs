//! An X data archive (.zip): its posts, account and picture, the users counted from it, and
//! the card of the bot they would make.
#![no_main]

use botcard::recipe::{self, Data, DataFile};
use botcard::{archive, card, dataset};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(a) = archive::read(std::io::Cursor::new(data), "fuzz.zip") else {
        return;
    };
    let file = DataFile {
        user: None,
        label: "fuzz.zip".into(),
        data: Data::Archive(&a),
    };
    if let Ok(users) = recipe::read_users(&[file]) {
        let _ = dataset::enough_text(&users);
        let handle = recipe::default_handle(&users);
        let _ = card::huggingtweets_card(&users, &handle, None, &card::CardNotes::default());
    }
});
