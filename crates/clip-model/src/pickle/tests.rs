use super::*;

#[test]
fn refuses_unexpected_globals() {
    // pickle.dumps of a reduce to os.system("echo hi"), protocol 2
    let evil = b"\x80\x02cposix\nsystem\nq\x00X\x07\x00\x00\x00echo hiq\x01\x85q\x02Rq\x03.";
    assert_eq!(
        parse(evil),
        Err(PickleError::UnsafeGlobal("posix.system".into()))
    );
    let evil = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93X\x01\x00\x00\x001\x85R.";
    assert_eq!(
        parse(evil),
        Err(PickleError::UnsafeGlobal("builtins.eval".into()))
    );
}

#[test]
fn parses_containers() {
    // pickle.dumps({"a": [1, 2.5, None, True], "b": (300, -5)}, protocol=2)
    let data = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01G@\x04\x00\x00\x00\x00\x00\x00N\x88eX\x01\x00\x00\x00bq\x03M,\x01J\xfb\xff\xff\xff\x86q\x04u.";
    let v = parse(data).unwrap();
    assert_eq!(
        v,
        Value::Dict(vec![
            (
                Value::Str("a".into()),
                Value::List(vec![
                    Value::Int(1),
                    Value::Float(2.5),
                    Value::None,
                    Value::Bool(true)
                ])
            ),
            (
                Value::Str("b".into()),
                Value::Tuple(vec![Value::Int(300), Value::Int(-5)])
            ),
        ])
    );
    assert!(matches!(parse(&data[..20]), Err(PickleError::Malformed(_))));
}
